//! The security policy: what a pushed compose file may not ask of the host unless the
//! operator allows it in `ROOT/deploy.yml`.
//!
//! Everything in the pushed repo is input from the network, so anything that would give a
//! container power over the host, over another project, or over `deploy` itself is refused
//! by default. The checks are pure: the caller resolves every path of the `Spec` to the real
//! path it leads to (symlinks followed) and says which directories containers can write to
//! and which Docker objects belong to someone else; this module only judges.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::options::capability;
use super::spec::{Build, Config, Logging, Mount, Network, Service, Spec, Volume};
use crate::ids::ServiceName;
use crate::settings::Allowances;

/// One thing the compose file asks for that the policy refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// `services.web.privileged`.
    pub(crate) key_path: String,
    /// Why it is dangerous.
    pub(crate) reason: String,
    /// The `deploy.yml` setting that would permit it, as YAML (`allow: {privileged: true}`),
    /// or `None` when no setting can.
    pub(crate) allowance: Option<String>,
}

/// Every refusal of one spec, so that an operator sees them all at once.
#[derive(Debug, thiserror::Error)]
pub(crate) struct PolicyError {
    pub(crate) refusals: Vec<Refusal>,
    /// `ROOT/deploy.yml`, named in each message.
    pub(crate) settings_file: PathBuf,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.refusals.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: refused: {}", r.key_path, r.reason)?;
            if let Some(allowance) = &r.allowance {
                write!(
                    f,
                    "; an operator can allow it for this project with `{allowance}` in `{}`",
                    self.settings_file.display()
                )?;
            }
        }
        Ok(())
    }
}

/// Where things are on the host, as real paths (symlinks resolved).
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// ROOT.
    pub(crate) root: PathBuf,
    /// `ROOT/code`, the work tree: build contexts and volume devices must be inside it.
    pub(crate) code: PathBuf,
    /// `ROOT/code/.secrets`: its files travel as mounted files only.
    pub(crate) secrets: PathBuf,
    /// What holds `deploy`'s own state (the repo and its hooks, the ledger, the lock, the
    /// logs, the files `deploy` writes, the host's settings): no container may reach it.
    pub(crate) own: Vec<PathBuf>,
}

/// A directory some container can write to, so it can swap what is below it (for a
/// symlink, say) between a check and the moment Docker mounts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Writable {
    pub(crate) dir: PathBuf,
    /// Who can: "the running container `x`", "`services.web.volumes[0]`".
    pub(crate) by: String,
}

/// Docker objects the spec names that are not this project's.
#[derive(Clone, Debug, Default)]
pub(crate) struct Foreign {
    /// Services whose image would be someone else's: the image repo a built service tags
    /// holds images made outside this project, or a service runs another project's image.
    pub(crate) images: BTreeMap<ServiceName, ForeignImage>,
    /// Docker names of existing volumes not labelled as this project's.
    pub(crate) volumes: BTreeSet<String>,
    /// Docker names of existing networks not labelled as this project's.
    pub(crate) networks: BTreeSet<String>,
    /// Images a `build.cache_from` names that another project built, with why they are
    /// not this project's.
    pub(crate) cache_images: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ForeignImage {
    /// The image repository (`bpt-server`), for the allowance.
    pub(crate) repo: String,
    /// Why it is not this project's.
    pub(crate) reason: String,
}

/// What the policy judges a spec against besides the spec itself.
pub(crate) struct Host<'a> {
    pub(crate) layout: &'a Layout,
    pub(crate) allow: &'a Allowances,
    pub(crate) writable: &'a [Writable],
    pub(crate) foreign: &'a Foreign,
    /// `ROOT/deploy.yml`, for the messages.
    pub(crate) settings_file: &'a Path,
}

/// How a host path is used, which decides what is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// A bind mount; `writable` unless `:ro`.
    Mount {
        writable: bool,
    },
    /// An `env_file:` or the interpolation `.env`: its values become variables.
    EnvFile,
    /// A `secrets:` or `configs:` file, mounted read-only.
    File,
    BuildContext,
    /// A compose file of the work tree.
    ComposeFile,
    /// A named volume's `driver_opts.device` mounted with `o: bind`.
    VolumeDevice,
}

#[derive(Default)]
struct Refusals(Vec<Refusal>);

impl Refusals {
    fn add(&mut self, key_path: String, reason: String, allowance: Option<String>) {
        self.0.push(Refusal {
            key_path,
            reason,
            allowance,
        });
    }
}

/// Checks `spec`, whose paths are real paths, against the policy.
pub(crate) fn check(spec: &Spec, host: &Host<'_>) -> Result<(), PolicyError> {
    let mut out = Refusals::default();
    for (name, s) in &spec.services {
        let at = format!("services.{name}");
        powers(&at, s, host.allow, &mut out);
        namespaces(&at, s, host.allow, &mut out);
        volumes_from(&at, s, &mut out);
        mounts(&at, s, host, &mut out);
        if let Some(build) = &s.build {
            build_policy(&at, build, host, &mut out);
            build_sources(&at, build, spec, host, &mut out);
        }
        if let Some(logging) = &s.options.logging {
            logging_policy(&at, logging, host.allow, &mut out);
        }
        if let Some(image) = host.foreign.images.get(name) {
            let allowance = s
                .build
                .is_some()
                .then(|| format!("allow: {{image_names: [{}]}}", image.repo));
            out.add(format!("{at}.image"), image.reason.clone(), allowance);
        }
    }
    networks(spec, host, &mut out);
    for (key, volume) in &spec.volumes {
        volume_policy(key, volume, host, &mut out);
    }
    for (name, secret) in &spec.secrets {
        let at = format!("secrets.{name}.file");
        judge(&at, &secret.file, Use::File, host, &mut out);
    }
    for (name, config) in &spec.configs {
        if let Config::File(file) = config {
            judge(
                &format!("configs.{name}.file"),
                file,
                Use::File,
                host,
                &mut out,
            );
        }
    }
    if out.0.is_empty() {
        Ok(())
    } else {
        Err(PolicyError {
            refusals: out.0,
            settings_file: host.settings_file.to_owned(),
        })
    }
}

/// Privileges, capabilities, devices and confinement.
fn powers(at: &str, s: &Service, allow: &Allowances, out: &mut Refusals) {
    if s.options.privileged && !allow.privileged {
        out.add(
            format!("{at}.privileged"),
            "a privileged container has full control of the host".to_owned(),
            Some("allow: {privileged: true}".to_owned()),
        );
    }
    let hooks = (s.post_start.iter().map(|h| ("post_start", h)))
        .enumerate()
        .chain(s.pre_stop.iter().map(|h| ("pre_stop", h)).enumerate());
    for (i, (key, hook)) in hooks {
        if hook.privileged && !allow.privileged {
            out.add(
                format!("{at}.{key}[{i}].privileged"),
                "a privileged command in a container has full control of the host".to_owned(),
                Some("allow: {privileged: true}".to_owned()),
            );
        }
    }
    let allowed_caps: Vec<String> = allow.cap_add.iter().map(|c| capability(c)).collect();
    for (i, cap) in s.options.cap_add.iter().enumerate() {
        if !DOCKER_DEFAULT_CAPS.contains(&cap.as_str()) && !allowed_caps.contains(cap) {
            out.add(
                format!("{at}.cap_add[{i}]"),
                format!("the capability `{cap}` gives the container powers over the host"),
                Some(format!("allow: {{cap_add: [{cap}]}}")),
            );
        }
    }
    if !allow.devices {
        for (i, device) in s.options.devices.iter().enumerate() {
            out.add(
                format!("{at}.devices[{i}]"),
                format!("the device `{device}` gives the container direct access to host hardware"),
                Some("allow: {devices: true}".to_owned()),
            );
        }
    }
    if !allow.unconfined {
        for (i, opt) in s.options.security_opt.iter().enumerate() {
            if let Some(why) = unconfining(opt) {
                out.add(
                    format!("{at}.security_opt[{i}]"),
                    format!("`{opt}` {why}"),
                    Some("allow: {unconfined: true}".to_owned()),
                );
            }
        }
    }
}

/// `network_mode`, `pid`, `ipc` and `userns_mode`: the host's namespaces, another
/// container's, or Docker's shared default network.
fn namespaces(at: &str, s: &Service, allow: &Allowances, out: &mut Refusals) {
    for (key, value, why) in [
        (
            "network_mode",
            &s.options.network_mode,
            "gives the container the host's network stack",
        ),
        (
            "pid",
            &s.options.pid,
            "lets the container see and signal every process of the host",
        ),
        (
            "ipc",
            &s.options.ipc,
            "gives the container the host's shared memory",
        ),
        (
            "userns_mode",
            &s.options.userns_mode,
            "makes root in the container root on the host",
        ),
    ] {
        let Some(value) = value.as_deref() else {
            continue;
        };
        if value == "host" && !allow.host_namespaces {
            out.add(
                format!("{at}.{key}"),
                format!("`host` {why}"),
                Some("allow: {host_namespaces: true}".to_owned()),
            );
        } else if value.starts_with("container:") {
            out.add(
                format!("{at}.{key}"),
                format!(
                    "`{value}` joins a container outside this project, whose files, processes and network it could reach; use `service:NAME` for a service of this file"
                ),
                None,
            );
        } else if key == "network_mode"
            && matches!(value, "bridge" | "default")
            && !allowed_name(&allow.external_networks, "bridge")
        {
            out.add(
                format!("{at}.{key}"),
                format!(
                    "`{value}` puts the container on Docker's shared `bridge` network, where containers of other projects can reach it"
                ),
                Some("allow: {external_networks: [bridge]}".to_owned()),
            );
        }
    }
}

/// `volumes_from: [container:NAME]` mounts the volumes of a container outside the project:
/// another app's data.
fn volumes_from(at: &str, s: &Service, out: &mut Refusals) {
    for (i, entry) in s.options.volumes_from.iter().enumerate() {
        if entry.starts_with("container:") {
            out.add(
                format!("{at}.volumes_from[{i}]"),
                format!(
                    "`{entry}` mounts the volumes of a container outside this project, and with them its data; name a service of this file"
                ),
                None,
            );
        }
    }
}

fn allowed_name(list: &[String], name: &str) -> bool {
    list.iter().any(|n| n == name)
}

/// Bind mounts and env files: where they really lead, and whether a container could swap
/// them before Docker mounts them.
fn mounts(at: &str, s: &Service, host: &Host<'_>, out: &mut Refusals) {
    for (i, mount) in s.volumes.iter().enumerate() {
        if let Mount::Bind {
            source, read_only, ..
        } = mount
        {
            let key = format!("{at}.volumes[{i}]");
            let used = Use::Mount {
                writable: !read_only,
            };
            if judge(&key, source, used, host, out) {
                swappable(&key, source, host.writable, out);
            }
        }
    }
    for file in &s.env_files {
        judge(&file.key_path, &file.path, Use::EnvFile, host, out);
    }
}

/// Refuses a mount source strictly inside a directory a container can write to: that
/// container could replace a directory on the way with a symlink to `/` after the check,
/// and Docker would follow it.
fn swappable(key: &str, source: &Path, writable: &[Writable], out: &mut Refusals) {
    if let Some(w) = writable
        .iter()
        .find(|w| source != w.dir && source.starts_with(&w.dir))
    {
        out.add(
            key.to_owned(),
            format!(
                "`{}` is inside `{}`, which {} can write to: it could swap the path for a symlink before Docker mounts it; mount `{}` itself, or keep the two apart",
                source.display(),
                w.dir.display(),
                w.by,
                w.dir.display()
            ),
            None,
        );
    }
}

fn build_policy(at: &str, build: &Build, host: &Host<'_>, out: &mut Refusals) {
    judge(
        &format!("{at}.build.context"),
        &build.context,
        Use::BuildContext,
        host,
        out,
    );
    let key = format!("{at}.build.network");
    match build.network.as_deref() {
        None | Some("default" | "none") => {}
        Some("host") if host.allow.host_namespaces => {}
        Some("host") => out.add(
            key,
            "`host` gives the build's `RUN` steps the host's network stack".to_owned(),
            Some("allow: {host_namespaces: true}".to_owned()),
        ),
        Some(n) if n.starts_with("container:") => out.add(
            key,
            format!(
                "`{n}` runs the build's `RUN` steps in a container outside this project's reach"
            ),
            None,
        ),
        Some(n) if allowed_name(&host.allow.external_networks, n) => {}
        Some(n) => out.add(
            key,
            format!(
                "`{n}` is a network outside this project: the build's `RUN` steps could reach whatever is on it"
            ),
            Some(format!("allow: {{external_networks: [{n}]}}")),
        ),
    }
}

/// What a build reads besides its context: its secrets come only from `.secrets/` (they
/// are the operator's, never the repository's), and the images whose layers it reuses are
/// this project's or no project's: another project's layers may hold what its own
/// secrets fetched.
fn build_sources(at: &str, build: &Build, spec: &Spec, host: &Host<'_>, out: &mut Refusals) {
    for (i, secret) in build.secrets.iter().enumerate() {
        let Some(file) = spec.secrets.get(&secret.source).map(|s| &s.file) else {
            continue;
        };
        if !file.starts_with(&host.layout.secrets) {
            out.add(
                format!("{at}.build.secrets[{i}]"),
                format!(
                    "the secret `{}` is `{}`, outside `{}`: a build reads secrets only from the operator's `.secrets/`, never from the repository",
                    secret.source,
                    file.display(),
                    host.layout.secrets.display()
                ),
                None,
            );
        }
    }
    for (i, image) in build.cache_from.iter().enumerate() {
        if let Some(reason) = host.foreign.cache_images.get(image) {
            out.add(format!("{at}.build.cache_from[{i}]"), reason.clone(), None);
        }
    }
}

/// Logging drivers that keep the log on this host.
const LOCAL_LOG_DRIVERS: [&str; 5] = ["json-file", "local", "journald", "syslog", "none"];

fn logging_policy(at: &str, logging: &Logging, allow: &Allowances, out: &mut Refusals) {
    if let Some(driver) = &logging.driver
        && !LOCAL_LOG_DRIVERS.contains(&driver.as_str())
        && !allowed_name(&allow.logging_drivers, driver)
    {
        out.add(
            format!("{at}.logging.driver"),
            format!(
                "the `{driver}` driver makes the Docker engine send the container's output elsewhere, from the host"
            ),
            Some(format!("allow: {{logging_drivers: [{driver}]}}")),
        );
    }
    for (key, value) in &logging.options {
        let address = value.contains("://")
            || ["-address", "-url", "-endpoint", "-host"]
                .iter()
                .any(|s| key.ends_with(s));
        if address && !allowed_name(&allow.log_addresses, value) {
            out.add(
                format!("{at}.logging.options.{key}"),
                format!(
                    "`{value}` makes the Docker engine connect there, from the host (a local socket or service included)"
                ),
                Some(format!("allow: {{log_addresses: [\"{value}\"]}}")),
            );
        }
    }
}

/// Bridge options that change nothing outside the network itself.
const HARMLESS_BRIDGE_OPTS: [&str; 3] = [
    "com.docker.network.driver.mtu",
    "com.docker.network.bridge.enable_icc",
    "com.docker.network.bridge.enable_ip_masquerade",
];

/// What a network this file creates is made of: another driver (`macvlan`, `ipvlan`) or a
/// bridge option (`com.docker.network.bridge.name` of a host bridge) can put containers on
/// the host's own networks, past the private network every stack gets.
fn network_makeup(at: &str, network: &Network, allow: &Allowances, out: &mut Refusals) {
    let drivers = [
        (format!("{at}.driver"), network.driver.as_deref(), "bridge"),
        (
            format!("{at}.ipam.driver"),
            network.ipam.as_ref().and_then(|i| i.driver.as_deref()),
            "default",
        ),
    ];
    for (key, driver, plain) in drivers {
        if let Some(driver) = driver.filter(|d| *d != plain)
            && !allowed_name(&allow.network_drivers, driver)
        {
            out.add(
                key,
                format!("the `{driver}` driver can attach containers to the host's own networks or plugins"),
                Some(format!("allow: {{network_drivers: [{driver}]}}")),
            );
        }
    }
    if !allow.network_driver_opts {
        for opt in network.driver_opts.keys() {
            if !HARMLESS_BRIDGE_OPTS.contains(&opt.as_str()) {
                out.add(
                    format!("{at}.driver_opts.{opt}"),
                    "network `driver_opts` can join a host bridge or interface".to_owned(),
                    Some("allow: {network_driver_opts: true}".to_owned()),
                );
            }
        }
    }
}

fn networks(spec: &Spec, host: &Host<'_>, out: &mut Refusals) {
    let allow = host.allow;
    for (key, network) in &spec.networks {
        let at = format!("networks.{key}");
        if !network.external {
            network_makeup(&at, network, allow, out);
        }
        let docker_name = network.name.as_deref().unwrap_or(key);
        if network.external && docker_name == "host" {
            // Docker's predefined `host` network is `network_mode: host` by another name.
            if !allow.host_namespaces {
                out.add(
                    at,
                    "the external network `host` gives its services the host's network stack"
                        .to_owned(),
                    Some("allow: {host_namespaces: true}".to_owned()),
                );
            }
        } else if network.external && !allowed_name(&allow.external_networks, docker_name) {
            out.add(
                at,
                format!(
                    "the external network `{docker_name}` is not this project's: whatever else is on it could reach these services"
                ),
                Some(format!("allow: {{external_networks: [{docker_name}]}}")),
            );
        } else if !network.external
            && host.foreign.networks.contains(docker_name)
            && !allowed_name(&allow.external_networks, docker_name)
        {
            out.add(
                at,
                format!(
                    "a network named `{docker_name}` already exists and is not this project's; choose another `name:`"
                ),
                Some(format!("allow: {{external_networks: [{docker_name}]}}")),
            );
        }
    }
}

fn volume_policy(key: &str, volume: &Volume, host: &Host<'_>, out: &mut Refusals) {
    let at = format!("volumes.{key}");
    let allow = host.allow;
    let docker_name = volume.name.as_deref().unwrap_or(key);
    let shared = volume.external || host.foreign.volumes.contains(docker_name);
    if shared && !allowed_name(&allow.external_volumes, docker_name) {
        let reason = if volume.external {
            format!(
                "the external volume `{docker_name}` is not this project's: its data belongs to someone else"
            )
        } else {
            format!(
                "a volume named `{docker_name}` already exists and is not this project's; choose another `name:`"
            )
        };
        out.add(
            at.clone(),
            reason,
            Some(format!("allow: {{external_volumes: [{docker_name}]}}")),
        );
    }
    if volume.driver_opts.is_empty() || memory_only(volume) {
        return;
    }
    let at = format!("{at}.driver_opts");
    if !allow.volume_driver_opts {
        out.add(
            at,
            "`driver_opts` let a volume mount any host path or device".to_owned(),
            Some("allow: {volume_driver_opts: true}".to_owned()),
        );
        return;
    }
    driver_opts(&at, volume, host, out);
}

/// A `tmpfs` volume of the local driver that binds nothing reaches nothing on the host, so
/// it needs no allowance: `{type: tmpfs, device: tmpfs, o: "size=64m"}`.
fn memory_only(volume: &Volume) -> bool {
    let opts = &volume.driver_opts;
    volume.driver.as_deref().is_none_or(|d| d == "local")
        && opts.get("type").map(String::as_str) == Some("tmpfs")
        && opts.get("device").is_none_or(|d| d == "tmpfs")
        && !volume.binds_device()
        && opts
            .keys()
            .all(|k| matches!(k.as_str(), "type" | "device" | "o"))
}

/// With `volume_driver_opts` allowed: a bind must lead into `ROOT/code`, tmpfs takes no
/// device, and any other local filesystem on a device needs `devices`.
fn driver_opts(at: &str, volume: &Volume, host: &Host<'_>, out: &mut Refusals) {
    let local = volume.driver.as_deref().is_none_or(|d| d == "local");
    let Some(device) = volume.driver_opts.get("device").filter(|_| local) else {
        return;
    };
    let bind = volume.binds_device();
    let fs = volume.driver_opts.get("type").map(String::as_str);
    if bind {
        let key = format!("{at}.device");
        if judge(&key, Path::new(device), Use::VolumeDevice, host, out) {
            swappable(&key, Path::new(device), host.writable, out);
        }
    } else if fs == Some("tmpfs") {
        if device != "tmpfs" {
            out.add(
                format!("{at}.device"),
                format!("a `tmpfs` volume takes no device (write `device: tmpfs`), not `{device}`"),
                None,
            );
        }
    } else if !matches!(fs, Some("nfs" | "nfs4" | "cifs" | "smb3")) && !host.allow.devices {
        out.add(
            format!("{at}.device"),
            format!("the volume mounts the host device `{device}`"),
            Some("allow: {devices: true}".to_owned()),
        );
    }
}

/// The capabilities every Docker container has unless dropped. Adding one back after
/// `cap_drop: [ALL]` grants nothing beyond a default container, so it needs no allowance.
const DOCKER_DEFAULT_CAPS: [&str; 14] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Why a `security_opt` entry lifts confinement, if it does. Docker accepts both `=` and
/// the older `:` as the separator.
fn unconfining(opt: &str) -> Option<&'static str> {
    let (key, value) = opt
        .split_once('=')
        .or_else(|| opt.split_once(':'))
        .unwrap_or((opt, ""));
    let value = value.trim();
    match key.trim() {
        "seccomp" if value == "unconfined" => Some("turns off the syscall filter"),
        // A profile is given inline or as a file the repo controls: it can allow anything.
        "seccomp" if value != "default" => {
            Some("replaces the syscall filter with one the repository chooses")
        }
        "apparmor" if value == "unconfined" => Some("turns off AppArmor confinement"),
        "label" if value == "disable" => Some("turns off SELinux confinement"),
        "label" if matches!(value, "type:spc_t" | "type:unconfined_t") => {
            Some("runs the container in an unconfined SELinux domain")
        }
        "no-new-privileges" if value == "false" => {
            Some("lets processes gain privileges through setuid binaries")
        }
        "systempaths" if value == "unconfined" => {
            Some("exposes the host's masked `/proc` and `/sys` paths")
        }
        _ => None,
    }
}

/// Judges one real path for one use; records a refusal and returns `false` when it may not
/// be used.
fn judge(key: &str, path: &Path, used: Use, host: &Host<'_>, out: &mut Refusals) -> bool {
    match host_path(path, used, host.layout, host.allow) {
        None => true,
        Some((reason, allowance)) => {
            out.add(key.to_owned(), reason, allowance);
            false
        }
    }
}

/// Why a host path may not be used so, and what would permit it. Under ROOT, everything is
/// the project's except `deploy`'s own state, which nothing may reach: a container that
/// could write to `code.git` or `deploy.yml`, or hold the lock, could run code on the host,
/// lift this very policy, or stop every deploy. Files in `.secrets/` travel as mounted files
/// only. Builds and volume devices stay in the work tree.
pub(crate) fn host_path(
    path: &Path,
    used: Use,
    layout: &Layout,
    allow: &Allowances,
) -> Option<(String, Option<String>)> {
    let shown = path.display();
    let own = layout
        .own
        .iter()
        .find(|own| path.starts_with(own) || own.starts_with(path));
    if let Some(own) = own.filter(|_| path.starts_with(&layout.root)) {
        let what = if own.starts_with(path) && own != path {
            format!("`{shown}` holds `{}`, deploy's own state", own.display())
        } else {
            format!("`{shown}` is deploy's own state")
        };
        return Some((
            format!("{what}, which a container could use to take over the host"),
            None,
        ));
    }
    let allowed = allow.bind_mounts.iter().any(|a| {
        let a = if a.is_absolute() {
            a.clone()
        } else {
            layout.root.join(a)
        };
        path.starts_with(super::mounts::normalize(&a))
    });
    let allowance = Some(format!("allow: {{bind_mounts: [\"{shown}\"]}}"));
    if !path.starts_with(&layout.root) {
        let confined = matches!(
            used,
            Use::BuildContext | Use::VolumeDevice | Use::ComposeFile
        );
        if allowed && !confined {
            return None;
        }
        let reason =
            if path == Path::new("/var/run/docker.sock") || path == Path::new("/run/docker.sock") {
                format!("`{shown}` is the Docker socket, which gives full control of the host")
            } else {
                format!("`{shown}` is outside `{}`", layout.root.display())
            };
        let allowance = if confined { None } else { allowance };
        return Some((reason, allowance));
    }
    in_root(path, used, layout)
}

/// The rules for a path under ROOT that is not `deploy`'s own.
fn in_root(path: &Path, used: Use, layout: &Layout) -> Option<(String, Option<String>)> {
    let shown = path.display();
    let in_secrets = path.starts_with(&layout.secrets);
    match used {
        Use::EnvFile if in_secrets => Some((
            format!(
                "`{shown}` is in `.secrets/`, whose files travel only as files: declare it under `secrets:` and read it from `/run/secrets/<name>`, never as variables"
            ),
            None,
        )),
        Use::Mount { writable: true } if in_secrets => Some((
            format!("`{shown}` holds the operator's secret files; mount it read-only (`:ro`)"),
            None,
        )),
        Use::BuildContext | Use::VolumeDevice | Use::ComposeFile
            if !path.starts_with(&layout.code) =>
        {
            Some((
                format!(
                    "`{shown}` is outside the work tree `{}`",
                    layout.code.display()
                ),
                None,
            ))
        }
        Use::BuildContext | Use::ComposeFile if in_secrets => Some((
            format!("`{shown}` is in `.secrets/`, which never goes into a build"),
            None,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::spec::{Build, Service};

    fn layout() -> Layout {
        let root = PathBuf::from("/srv/app");
        Layout {
            code: root.join("code"),
            secrets: root.join("code/.secrets"),
            own: crate::root::Root::new(root.clone()).own_state(),
            root,
        }
    }

    fn refusals(spec: &Spec, writable: &[Writable], foreign: &Foreign) -> Vec<String> {
        let (layout, allow) = (layout(), Allowances::default());
        let host = Host {
            layout: &layout,
            allow: &allow,
            writable,
            foreign,
            settings_file: Path::new("/srv/app/deploy.yml"),
        };
        match check(spec, &host) {
            Ok(()) => Vec::new(),
            Err(e) => e.refusals.into_iter().map(|r| r.key_path).collect(),
        }
    }

    fn with_service(name: &str, service: Service) -> Spec {
        let mut spec = Spec::default();
        spec.services
            .insert(ServiceName::parse(name).unwrap(), service);
        spec
    }

    fn bind(source: &str, read_only: bool) -> Mount {
        Mount::Bind {
            source: source.into(),
            target: "/x".into(),
            read_only,
            propagation: None,
        }
    }

    /// Issue 17, finding 3: a source below a directory some container can write to could be
    /// swapped for a symlink after the check; the directory itself cannot.
    #[test]
    fn issue17_a_mount_inside_a_writable_directory_is_refused() {
        let spec = with_service(
            "web",
            Service {
                image: Some("app".into()),
                volumes: vec![
                    bind("/srv/app/code/data", true),
                    bind("/srv/app/code", false),
                    bind("/srv/app/db-data", false),
                ],
                ..Service::default()
            },
        );
        let writable = [Writable {
            dir: "/srv/app/code".into(),
            by: "the running container `x`".into(),
        }];
        assert_eq!(
            refusals(&spec, &writable, &Foreign::default()),
            ["services.web.volumes[0]"]
        );
        assert!(refusals(&spec, &[], &Foreign::default()).is_empty());
    }

    /// Issue 17, findings 7 and 8: names that belong to someone else.
    #[test]
    fn issue17_other_projects_names_are_refused() {
        let mut spec = with_service(
            "web",
            Service {
                build: Some(Build {
                    context: "/srv/app/code".into(),
                    dockerfile: "Dockerfile".into(),
                    ..Build::default()
                }),
                image: Some("shared".into()),
                ..Service::default()
            },
        );
        spec.volumes.insert(
            "data".into(),
            crate::compose::spec::Volume {
                name: Some("other_pgdata".into()),
                ..Default::default()
            },
        );
        spec.networks.insert(
            "back".into(),
            crate::compose::spec::Network {
                name: Some("other_backend".into()),
                ..Default::default()
            },
        );
        let mut foreign = Foreign::default();
        foreign.volumes.insert("other_pgdata".into());
        foreign.networks.insert("other_backend".into());
        foreign.images.insert(
            ServiceName::parse("web").unwrap(),
            ForeignImage {
                repo: "shared".into(),
                reason: "not ours".into(),
            },
        );
        assert_eq!(
            refusals(&spec, &[], &foreign),
            ["services.web.image", "networks.back", "volumes.data"]
        );
        assert!(refusals(&spec, &[], &Foreign::default()).is_empty());
    }

    #[test]
    fn deploys_own_state_is_refused_whatever_the_allowance() {
        let (layout, mut allow) = (layout(), Allowances::default());
        allow.bind_mounts = vec!["/srv".into()];
        let file = Use::Mount { writable: false };
        for own in ["/srv/app/deploy.lock", "/srv/app/configs/x", "/srv/app"] {
            assert!(
                host_path(Path::new(own), file, &layout, &allow).is_some(),
                "{own}"
            );
        }
        assert!(host_path(Path::new("/srv/other"), file, &layout, &allow).is_none());
        assert!(host_path(Path::new("/srv/app/db-data"), file, &layout, &allow).is_none());
    }
}
