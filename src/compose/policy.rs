//! The security policy: what a pushed compose file may not ask of the host unless the
//! operator allows it in `ROOT/deploy.yml`.
//!
//! Everything in the pushed repo is input from the network, so anything that would give a
//! container power over the host is refused by default. The checks are lexical on the
//! normalised absolute paths of the `Spec`; the pipeline resolves symlinks before calling.

use std::fmt;
use std::path::{Path, PathBuf};

use super::normalize::capability;
use super::spec::{Config, Mount, Spec};
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

/// Checks `spec` against the policy. `root` is ROOT (`/srv/app`, holding `code/`); paths
/// under it are the project's own, except the files that hold `deploy`'s state.
pub(crate) fn check(spec: &Spec, root: &Path, allow: &Allowances) -> Result<(), PolicyError> {
    let mut refusals = Vec::new();
    let mut refuse = |key_path: String, reason: String, allowance: Option<String>| {
        refusals.push(Refusal {
            key_path,
            reason,
            allowance,
        });
    };
    for (name, s) in &spec.services {
        let at = format!("services.{name}");
        if s.privileged && !allow.privileged {
            refuse(
                format!("{at}.privileged"),
                "a privileged container has full control of the host".to_owned(),
                Some("allow: {privileged: true}".to_owned()),
            );
        }
        let allowed_caps: Vec<String> = allow.cap_add.iter().map(|c| capability(c)).collect();
        for (i, cap) in s.cap_add.iter().enumerate() {
            if !DOCKER_DEFAULT_CAPS.contains(&cap.as_str()) && !allowed_caps.contains(cap) {
                refuse(
                    format!("{at}.cap_add[{i}]"),
                    format!("the capability `{cap}` gives the container powers over the host"),
                    Some(format!("allow: {{cap_add: [{cap}]}}")),
                );
            }
        }
        if !allow.devices {
            for (i, device) in s.devices.iter().enumerate() {
                refuse(
                    format!("{at}.devices[{i}]"),
                    format!(
                        "the device `{device}` gives the container direct access to host hardware"
                    ),
                    Some("allow: {devices: true}".to_owned()),
                );
            }
        }
        if !allow.host_namespaces {
            for (key, value, why) in [
                (
                    "network_mode",
                    &s.network_mode,
                    "gives the container the host's network stack",
                ),
                (
                    "pid",
                    &s.pid,
                    "lets the container see and signal every process of the host",
                ),
                (
                    "ipc",
                    &s.ipc,
                    "gives the container the host's shared memory",
                ),
                (
                    "userns_mode",
                    &s.userns_mode,
                    "makes root in the container root on the host",
                ),
            ] {
                if value.as_deref() == Some("host") {
                    refuse(
                        format!("{at}.{key}"),
                        format!("`host` {why}"),
                        Some("allow: {host_namespaces: true}".to_owned()),
                    );
                }
            }
        }
        if !allow.unconfined {
            for (i, opt) in s.security_opt.iter().enumerate() {
                if let Some(why) = unconfining(opt) {
                    refuse(
                        format!("{at}.security_opt[{i}]"),
                        format!("`{opt}` {why}"),
                        Some("allow: {unconfined: true}".to_owned()),
                    );
                }
            }
        }
        for (i, mount) in s.volumes.iter().enumerate() {
            if let Mount::Bind { source, .. } = mount
                && let Some((reason, allowance)) = host_path(source, root, allow)
            {
                refuse(format!("{at}.volumes[{i}]"), reason, allowance);
            }
        }
        for (i, file) in s.env_files.iter().enumerate() {
            if let Some((reason, allowance)) = host_path(file, root, allow) {
                refuse(format!("{at}.env_file[{i}]"), reason, allowance);
            }
        }
        if let Some(build) = &s.build {
            if let Some((reason, allowance)) = host_path(&build.context, root, allow) {
                refuse(format!("{at}.build.context"), reason, allowance);
            }
            if build.network.as_deref() == Some("host") && !allow.host_namespaces {
                refuse(
                    format!("{at}.build.network"),
                    "`host` gives the build's `RUN` steps the host's network stack".to_owned(),
                    Some("allow: {host_namespaces: true}".to_owned()),
                );
            }
        }
    }
    for (key, network) in &spec.networks {
        // Docker's predefined `host` network, joined as an external network, is
        // `network_mode: host` by another name.
        let docker_name = network.name.as_deref().unwrap_or(key);
        if network.external && docker_name == "host" && !allow.host_namespaces {
            refuse(
                format!("networks.{key}"),
                "the external network `host` gives its services the host's network stack"
                    .to_owned(),
                Some("allow: {host_namespaces: true}".to_owned()),
            );
        }
    }
    for (key, volume) in &spec.volumes {
        // The `local` driver mounts whatever `driver_opts` say: with `o: bind` a host path,
        // without it a host device. Network filesystems and tmpfs reach nothing on the host.
        let local = volume.driver.as_deref().is_none_or(|d| d == "local");
        let Some(device) = volume.driver_opts.get("device").filter(|_| local) else {
            continue;
        };
        let at = format!("volumes.{key}.driver_opts.device");
        let bind = volume
            .driver_opts
            .get("o")
            .is_some_and(|o| o.split(',').any(|opt| opt.trim() == "bind"));
        let fs = volume.driver_opts.get("type").map(String::as_str);
        if bind {
            let path = super::mounts::normalize(Path::new(device));
            if let Some((reason, allowance)) = host_path(&path, root, allow) {
                refuse(at, reason, allowance);
            }
        } else if !matches!(fs, Some("nfs" | "nfs4" | "cifs" | "smb3" | "tmpfs")) && !allow.devices
        {
            refuse(
                at,
                format!("the volume mounts the host device `{device}`"),
                Some("allow: {devices: true}".to_owned()),
            );
        }
    }
    for (name, secret) in &spec.secrets {
        if let Some((reason, allowance)) = host_path(&secret.file, root, allow) {
            refuse(format!("secrets.{name}.file"), reason, allowance);
        }
    }
    for (name, config) in &spec.configs {
        if let Config::File(file) = config
            && let Some((reason, allowance)) = host_path(file, root, allow)
        {
            refuse(format!("configs.{name}.file"), reason, allowance);
        }
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(PolicyError {
            refusals,
            settings_file: root.join("deploy.yml"),
        })
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

/// Why a host path may not be used, and what would permit it. Paths under ROOT are the
/// project's, except the ones holding `deploy`'s own state: a container that could write
/// to `code.git` or `deploy.yml` could run code on the host or lift this very policy.
fn host_path(path: &Path, root: &Path, allow: &Allowances) -> Option<(String, Option<String>)> {
    let allowed = allow.bind_mounts.iter().any(|a| {
        let a = if a.is_absolute() {
            a.clone()
        } else {
            root.join(a)
        };
        path.starts_with(super::mounts::normalize(&a))
    });
    if allowed {
        return None;
    }
    let allowance = Some(format!("allow: {{bind_mounts: [\"{}\"]}}", path.display()));
    let shown = path.display();
    if !path.starts_with(root) {
        let reason =
            if path == Path::new("/var/run/docker.sock") || path == Path::new("/run/docker.sock") {
                format!("`{shown}` is the Docker socket, which gives full control of the host")
            } else {
                format!("`{shown}` is outside `{}`", root.display())
            };
        return Some((reason, allowance));
    }
    let rel = path.strip_prefix(root).unwrap_or(path);
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    let own = match first.as_deref() {
        None => true,
        Some(f) => {
            f == "code.git"
                || f == "build-logs"
                || f == "deploy.yml"
                || f == "deploy.sock"
                || f.starts_with("deploy.db")
        }
    };
    own.then(|| {
        (
            format!("`{shown}` holds deploy's own state, which a container could use to take over the host"),
            allowance,
        )
    })
}
