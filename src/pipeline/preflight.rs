//! Checks that need the disk, run before anything is built or stopped: files the compose
//! file names, the security policy on real paths, and free space for the build.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bollard::Docker;

use crate::compose::Spec;
use crate::compose::spec::{Config, Mount};
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

/// Refuses a spec whose files are missing or whose mounts break the policy. Secret values
/// are registered for redaction as they are found.
pub(crate) fn check(
    root: &Root,
    settings: &Settings,
    spec: &Spec,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    for (name, secret) in &spec.secrets {
        let value = std::fs::read_to_string(&secret.file).map_err(|e| {
            anyhow::anyhow!(
                "secrets.{name}: cannot read `{}`: {e}; put the file there on the server (it is never pushed)",
                secret.file.display()
            )
        })?;
        reporter.redact(&value);
    }
    write_content_configs(root, spec)?;
    for (name, svc) in &spec.services {
        if let Some(build) = &svc.build {
            let dockerfile = build.context.join(&build.dockerfile);
            if !build.context.is_dir() {
                bail!(
                    "services.{name}.build: context `{}` is not a directory in the pushed tree",
                    build.context.display()
                );
            }
            if !dockerfile.is_file() {
                bail!(
                    "services.{name}.build: Dockerfile `{}` is not in the pushed tree",
                    build.dockerfile
                );
            }
        }
    }
    // The policy judges where paths really lead: a symlink in the pushed tree must not
    // smuggle `/etc` or the Docker socket in as `./config`.
    let real_root = std::fs::canonicalize(root.path())
        .with_context(|| format!("failed to resolve `{}`", root.path().display()))?;
    let mut real = spec.clone();
    for svc in real.services.values_mut() {
        for m in &mut svc.volumes {
            if let Mount::Bind { source, .. } = m {
                *source = resolve(source);
            }
        }
    }
    for secret in real.secrets.values_mut() {
        secret.file = resolve(&secret.file);
    }
    crate::compose::policy::check(&real, &real_root, &settings.allow)?;
    create_bind_sources(&real)
}

/// Creates missing bind-mount sources as empty directories, as docker-compose has Docker do
/// for `./data:/data`: a directory a repository cannot track when empty (or ignores) must
/// not fail the deploy. The policy has already judged each real path.
fn create_bind_sources(spec: &Spec) -> anyhow::Result<()> {
    for (name, svc) in &spec.services {
        for m in &svc.volumes {
            if let Mount::Bind { source, .. } = m
                && std::fs::symlink_metadata(source).is_err()
            {
                std::fs::create_dir_all(source).with_context(|| {
                    format!(
                        "services.{name}.volumes: failed to create the missing bind source `{}`",
                        source.display()
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Writes each `content:` config to `ROOT/configs/<name>`, where its container mounts it.
fn write_content_configs(root: &Root, spec: &Spec) -> anyhow::Result<()> {
    for (name, config) in &spec.configs {
        if let Config::Content(text) = config {
            if name.contains('/') || name.starts_with('.') {
                bail!(
                    "configs.{name}: a config with `content:` needs a plain name (no `/`, no leading `.`)"
                );
            }
            let dir = root.configs();
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("failed to create `{}`", dir.display()))?;
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("failed to write config `{}`", path.display()))?;
        }
    }
    Ok(())
}

/// Follows symlinks as far as the path exists; a path that does not exist yet (Docker
/// creates bind sources) keeps its missing tail under its resolved parent.
fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => resolve(parent).join(name),
        _ => path.to_path_buf(),
    }
}

/// Refuses to build when the disk holding Docker's data is nearly full: a full disk breaks
/// the running stack too.
pub(crate) async fn free_space(docker: &Docker, settings: &Settings) -> anyhow::Result<()> {
    let info = docker
        .info()
        .await
        .context("failed to ask the Docker engine where it keeps its data")?;
    let dir = info
        .docker_root_dir
        .unwrap_or_else(|| "/var/lib/docker".to_owned());
    let stat = nix::sys::statvfs::statvfs(Path::new(&dir))
        .with_context(|| format!("failed to read the free space of `{dir}`"))?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if free < settings.min_free_space {
        bail!(
            "only {} free in `{dir}`, below the {} a build needs; free some space (`docker system prune`) or lower `min_free_space` in ROOT/deploy.yml",
            gib(free),
            gib(settings.min_free_space)
        );
    }
    Ok(())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}
