//! The host side of the security policy: every path the compose file names is resolved once
//! to the real path it leads to, and every file it names is read through a descriptor that
//! is judged by where it really is, so nothing can swap a path between the check and the use.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::compose::Spec;
use crate::compose::policy::{self, Layout, Use};
use crate::compose::spec::{Config, Mount};
use crate::root::Root;
use crate::settings::Settings;

/// Where ROOT, the work tree, its secrets and `deploy`'s own state really are.
/// An environment other than `production` is confined to its folder `ROOT/envs/<name>`:
/// what is outside it (another environment's data, say) is outside its ROOT.
pub(crate) fn layout(root: &Root, settings: &Settings) -> anyhow::Result<Layout> {
    let real = std::fs::canonicalize(root.path())
        .with_context(|| format!("failed to resolve `{}`", root.path().display()))?;
    let real_root = Root::new(real.clone()).with_env(root.env().clone());
    let code = resolve(&real_root.code());
    let mut own = real_root.own_state();
    if let Some(file) = &settings.env_file {
        own.push(resolve(&real.join(file)));
    }
    Ok(Layout {
        secrets: code.join(".secrets"),
        code,
        root: resolve(&real_root.dir()),
        own,
    })
}

/// Follows symlinks as far as the path exists; a path that does not exist yet (Docker
/// creates bind sources) keeps its missing tail under its resolved parent.
pub(crate) fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => resolve(parent).join(name),
        _ => path.to_path_buf(),
    }
}

/// Replaces every host path of `spec` by the real path it leads to now: what the policy
/// judges and what Docker is given are then the same path.
pub(crate) fn resolve_paths(spec: &mut Spec) {
    for svc in spec.services.values_mut() {
        for m in &mut svc.volumes {
            if let Mount::Bind { source, .. } = m {
                *source = resolve(source);
            }
        }
        for file in &mut svc.env_files {
            file.path = resolve(&file.path);
        }
        if let Some(build) = &mut svc.build {
            build.context = resolve(&build.context);
        }
    }
    for secret in spec.secrets.values_mut() {
        secret.file = resolve(&secret.file);
    }
    for config in spec.configs.values_mut() {
        if let Config::File(file) = config {
            *file = resolve(file);
        }
    }
    for volume in spec.volumes.values_mut() {
        let binds = volume.binds_device();
        if let Some(device) = volume.driver_opts.get_mut("device").filter(|_| binds) {
            *device = resolve(Path::new(device.as_str()))
                .to_string_lossy()
                .into_owned();
        }
    }
}

/// Why a file named by the compose file was not read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The policy refuses where it really leads (the reason, without the key path).
    Refused(String),
    /// It cannot be used: not a regular file, too large, not text, unreadable.
    Unusable(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Refused(reason) => write!(f, "refused: {reason}"),
            ReadError::Unusable(message) => f.write_str(message),
        }
    }
}

/// A file read for the compose file, and where it really was.
pub(crate) struct HostFile {
    pub(crate) real: PathBuf,
    pub(crate) text: String,
}

/// Reads the file at `path` for `used`, or `None` when there is none. The file is opened
/// once; the policy then judges the path that descriptor really has, so a symlink swapped in
/// after a check leads nowhere. It must be a regular file of at most `limit` bytes (a fifo,
/// a device or a socket is refused before any byte is read), and UTF-8 text.
pub(crate) fn read(
    path: &Path,
    used: Use,
    layout: &Layout,
    settings: &Settings,
    limit: u64,
) -> Result<Option<HostFile>, ReadError> {
    let shown = path.display();
    let unusable = ReadError::Unusable;
    // Non-blocking, so opening a fifo does not wait for a writer.
    let file = match File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unusable(format!("cannot open `{shown}`: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| unusable(format!("cannot inspect `{shown}`: {e}")))?;
    if !meta.is_file() {
        return Err(unusable(format!("`{shown}` is not a regular file")));
    }
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| unusable(format!("cannot tell where `{shown}` leads: {e}")))?;
    if let Some((reason, _)) = policy::host_path(&real, used, layout, &settings.allow) {
        return Err(ReadError::Refused(reason));
    }
    if meta.len() > limit {
        return Err(unusable(too_large(path, limit)));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unusable(format!("cannot read `{shown}`: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(unusable(too_large(path, limit)));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| unusable(format!("`{shown}` is not UTF-8 text")))?;
    Ok(Some(HostFile { real, text }))
}

fn too_large(path: &Path, limit: u64) -> String {
    format!(
        "`{}` is larger than the {} limit",
        path.display(),
        crate::compose::bytes::human(limit)
    )
}
